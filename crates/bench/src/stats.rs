//! Rates and latency percentiles of one measured run.

use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latency of every successful operation, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl RunStats {
    pub fn merge(&mut self, other: RunStats) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
    }

    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) in milliseconds.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let index = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        f64::from(self.latencies_us[index]) / 1000.0
    }

    /// A markdown table row: name, rate, p50, p99, max, errors.
    pub fn row(&mut self, name: &str) -> String {
        format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            self.rate(),
            self.quantile_ms(0.5),
            self.quantile_ms(0.99),
            self.quantile_ms(1.0),
            self.errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_rate() {
        let mut stats = RunStats {
            ok: 100,
            errors: 0,
            elapsed: Duration::from_secs(2),
            latencies_us: (1..=100).rev().map(|ms| ms * 1000).collect(),
        };
        assert_eq!(stats.rate(), 50.0);
        assert_eq!(stats.quantile_ms(0.5), 51.0);
        assert_eq!(stats.quantile_ms(0.99), 99.0);
        assert_eq!(stats.quantile_ms(1.0), 100.0);
    }
}
