//! Writes the synthetic adversarial captures of
//! [`sessionwatch_streams::synth::adversarial_fixtures`] to a directory.
//!
//! `cargo run -p sessionwatch-streams --example gen_adversarial -- DIR`
//! (the committed copies live in `agent/streams/tests/data/adversarial/`;
//! `tests/fixtures.rs` checks they are what this writes).

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "agent/streams/tests/data/adversarial".to_string());
    std::fs::create_dir_all(&dir)?;
    for (name, bytes) in sessionwatch_streams::synth::adversarial_fixtures() {
        let path = std::path::Path::new(&dir).join(name);
        std::fs::write(&path, bytes)?;
        println!("{}", path.display());
    }
    Ok(())
}
