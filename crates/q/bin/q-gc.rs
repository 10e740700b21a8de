fn main() -> std::process::ExitCode {
    q::gc::main()
}
