fn main() {
    eprintln!("whittle-sensor: not built yet");
    std::process::exit(2);
}
