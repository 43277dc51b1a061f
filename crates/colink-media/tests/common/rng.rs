//! A tiny deterministic PRNG (xorshift64*) shared by this crate's tests: no global RNG, the same numbers on
//! every run.

/// xorshift64* with a caller-chosen non-zero seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next 64 pseudo-random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Roughly uniform in -1.0..1.0.
    #[allow(dead_code)] // used by jpeg.rs, not video.rs
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}
