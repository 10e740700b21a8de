fn main() -> std::process::ExitCode {
    q::front::main()
}
