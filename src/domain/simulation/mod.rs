//! The pure parts of `repayd simulate`: the borrower cash-flow model (`model`, `model.toml`),
//! what it makes of each borrower (`borrower`), and the figures of a run (`figures`).

pub mod borrower;
pub mod figures;
pub mod model;

/// A uniform number in [0, 1) from a seed and a name: the same pair always gives the same
/// number, so draws depend on what is drawn, never on when or in which order.
pub fn draw(seed: u64, key: &str) -> f64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}
