fn main() -> std::process::ExitCode {
    q::log::main()
}
