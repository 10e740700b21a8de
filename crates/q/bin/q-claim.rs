fn main() -> std::process::ExitCode {
    q::claim::main()
}
