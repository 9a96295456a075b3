//! `cargo xtask bench`: per-packet cost, scaling, control plane, balance, end to end.

fn main() {
    println!("vip bench: the benchmark suite is not built yet (issue 6).");
}
