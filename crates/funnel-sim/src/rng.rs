//! A small seeded random number generator owned by this crate.
//!
//! The plan must come out the same for the same seed on every machine and every release, so
//! the generator is written here (SplitMix64, public domain) rather than taken from a crate
//! whose algorithm may change between versions.

/// SplitMix64: 64 bits of state, full period, good enough statistics for a simulation.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    pub(crate) const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent stream for `(seed, stream, index)`: each referral draws from its own, so
    /// a referral's plan does not depend on how many numbers any other referral drew.
    pub(crate) fn derive(seed: u64, stream: u64, index: u64) -> Self {
        let mut mixer = Self::new(seed ^ 0x9E37_79B9_7F4A_7C15);
        let a = mixer.next_u64() ^ stream.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let mut mixer = Self::new(a);
        let b = mixer.next_u64() ^ index.wrapping_mul(0x94D0_49BB_1331_11EB);
        let mut rng = Self::new(b);
        rng.next_u64();
        rng
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        #[allow(
            clippy::cast_precision_loss,
            reason = "a 53-bit integer converts to f64 exactly"
        )]
        let mantissa = (self.next_u64() >> 11) as f64;
        mantissa / (1_u64 << 53) as f64
    }

    /// Uniform in `[low, high)`.
    pub(crate) fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        // Modulo bias is below 2^-40 for the sizes used here.
        usize::try_from(self.next_u64() % n64).unwrap_or(0)
    }

    /// Uniform in `low..=high`.
    pub(crate) fn between(&mut self, low: usize, high: usize) -> usize {
        if high <= low {
            low
        } else {
            low + self.below(high - low + 1)
        }
    }

    pub(crate) fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    /// A standard normal deviate (Box–Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given median and shape: waiting times are skewed, with a long tail
    /// of slow cases, which is what speed metrics (median vs p90) are about.
    pub(crate) fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }

    /// An index drawn with probability proportional to its weight (none when all are zero).
    pub(crate) fn weighted(
        &mut self,
        weights: impl IntoIterator<Item = f64> + Clone,
    ) -> Option<usize> {
        let total: f64 = weights.clone().into_iter().filter(|w| *w > 0.0).sum();
        if total <= 0.0 {
            return None;
        }
        let mut target = self.unit() * total;
        let mut last = None;
        for (index, weight) in weights.into_iter().enumerate() {
            if weight <= 0.0 {
                continue;
            }
            last = Some(index);
            if target < weight {
                return Some(index);
            }
            target -= weight;
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_streams_differ() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut rng = Rng::derive(7, 1, 2);
                move |_| rng.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut rng = Rng::derive(7, 1, 2);
                move |_| rng.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..5)
            .map({
                let mut rng = Rng::derive(7, 1, 3);
                move |_| rng.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn unit_and_weighted_stay_in_range() {
        let mut rng = Rng::new(42);
        let mut counts = [0_u32; 3];
        for _ in 0..30_000 {
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
            counts[rng.weighted([1.0, 0.0, 3.0]).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        let ratio = f64::from(counts[2]) / f64::from(counts[0]);
        assert!((2.7..3.3).contains(&ratio), "{ratio}");
    }
}
