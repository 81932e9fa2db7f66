//! The `wayback` command: parse arguments, set up logging, run, map errors to exit codes.

fn main() {
    std::process::exit(wayback::cli::main_entry());
}
