use clap::Parser;

/// whittle hardens container images to what the application really uses.
#[derive(Parser, Debug)]
#[command(name = "whittle", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    println!("whittle {}", whittle::VERSION);
}
