fn main() -> std::process::ExitCode {
    q::run::main()
}
