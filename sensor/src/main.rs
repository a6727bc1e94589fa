use whittle_sensor::{options, secrets};

fn main() {
    // First, while nothing but the kernel's copy holds the report token: the app will run
    // with the sensor's uid.
    if let Err(e) = secrets::make_undumpable() {
        eprintln!("whittle-sensor: prctl(PR_SET_DUMPABLE, 0): {e}");
        std::process::exit(whittle_sensor::run::SENSOR_FAILED);
    }
    let env = options::EnvDefaults::from_env();
    secrets::scrub(&["WHITTLE_REPORT_TOKEN"]);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match options::parse(&args, env) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("whittle-sensor: {e}\n{}", options::USAGE);
            std::process::exit(whittle_sensor::run::SENSOR_FAILED);
        }
    };
    let status = match opts.role {
        options::Role::App => whittle_sensor::run::run(opts),
        options::Role::Exec => whittle_sensor::run::exec(opts),
    };
    std::process::exit(status);
}
