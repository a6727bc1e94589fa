fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match whittle_sensor::options::parse(
        &args,
        whittle_sensor::options::EnvDefaults::from_env(),
    ) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("whittle-sensor: {e}\n{}", whittle_sensor::options::USAGE);
            std::process::exit(whittle_sensor::run::SENSOR_FAILED);
        }
    };
    std::process::exit(whittle_sensor::run::run(opts));
}
