// The simulator binary defines the C symbols `getrandom` and `getentropy` (src/entropy.rs)
// so that every consumer of OS entropy in the process (std's hash keys, `rand::rng()` via
// the getrandom crate, tokio's select! ordering) draws from the simulation's seed. The
// getrandom crate finds the function with dlsym(RTLD_DEFAULT), so the symbols must be in
// the executable's dynamic symbol table.
fn main() {
    for sym in ["getrandom", "getentropy"] {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={sym}");
    }
}
