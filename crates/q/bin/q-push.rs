fn main() -> std::process::ExitCode {
    q::push::main()
}
