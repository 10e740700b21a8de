fn main() -> std::process::ExitCode {
    q::ls::main()
}
