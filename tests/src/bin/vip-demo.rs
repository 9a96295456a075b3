//! `cargo xtask demo`: a lab in network namespaces with vipd, real traffic through a VIP.

fn main() {
    println!(
        "vip demo: the namespace lab is not built yet (issue 5); the eBPF build and setup ran."
    );
}
