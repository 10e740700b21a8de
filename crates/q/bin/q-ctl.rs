fn main() -> std::process::ExitCode {
    q::ctl::main()
}
