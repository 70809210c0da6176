//! `sentimqd`: the edge daemon. Classifies text arriving over MQTT (see the README's contract).

fn main() {
    println!("sentimqd {}", env!("CARGO_PKG_VERSION"));
}
