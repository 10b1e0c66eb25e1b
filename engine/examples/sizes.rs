//! Prints the in-memory sizes of the engine's hot types.
fn main() {
    use std::mem::size_of;
    println!("Event {}", size_of::<engine::Event>());
    println!("Command {}", size_of::<engine::Command>());
    println!("Order {}", size_of::<engine::Order>());
    println!("Node {}", size_of::<engine::book::Node>());
    println!("Trade {}", size_of::<engine::Trade>());
    println!("BalanceChange {}", size_of::<engine::BalanceChange>());
}
