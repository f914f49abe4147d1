fn main() -> std::process::ExitCode {
    mountlag::cli::main()
}
