use vip_tests::lab::{LabSpec, Mode, vipd::HealthConfig, viplab::VipLab};
fn main() {
    let mode = if std::env::args().nth(1).as_deref() == Some("dsr") {
        Mode::DsrL2
    } else {
        Mode::Tunnel
    };
    let vl = VipLab::start(LabSpec::new(3, mode), |lab| {
        vec![
            lab.vip_config(false, "tcp", &[0, 1, 2], HealthConfig::none()),
            lab.vip_config(true, "tcp", &[0, 1, 2], HealthConfig::none()),
        ]
    })
    .expect("build");
    println!("{} {}", vl.lab.prefix, vl.vipds[0].config.socket.display());
    std::thread::sleep(std::time::Duration::from_secs(60));
}
