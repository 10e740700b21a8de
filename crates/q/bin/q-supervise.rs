fn main() -> std::process::ExitCode {
    q::supervise::main()
}
