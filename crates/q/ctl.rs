//! Placeholder: this tool is being written.

pub fn main() -> std::process::ExitCode {
    eprintln!("not built yet");
    std::process::ExitCode::from(1)
}
