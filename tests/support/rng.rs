//! A small deterministic PRNG (xorshift64*), cheap enough to sit inside a timed loop. Shared by
//! the test binaries that draw random operations and by the benches (`benches/common`), each of
//! which includes this file as a module.

pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (made odd: xorshift never leaves zero).
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n` > 0).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
