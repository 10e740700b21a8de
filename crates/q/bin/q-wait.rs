fn main() -> std::process::ExitCode {
    q::wait::main()
}
