fn main() -> std::process::ExitCode {
    bundlefs::cli::main()
}
