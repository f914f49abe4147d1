fn main() -> std::process::ExitCode {
    mountlag::cmd::main()
}
