//! One client's bounds on what it types (frame size and rate), the refusals a room gives, and
//! the token bucket behind the room's rates (input frames, program starts, output bytes).

use std::time::{Duration, Instant};

use crate::config::TerminalConfig;

/// Why input was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputRefused {
    #[error("an input frame holds at most {0} bytes")]
    TooLarge(usize),
    #[error("too many input frames; at most {0} per second")]
    TooFast(u32),
    #[error("no program runs on the terminal; send {{\"type\":\"start\"}} to start one")]
    NotRunning,
    #[error("the program is not reading its input; wait for it")]
    Backlogged,
    #[error(
        "a run's stdin holds at most {0} bytes in all (its `input` included), as POST /run's body"
    )]
    TooMuch(usize),
    #[error("at most {0} program starts per minute on one terminal; wait a moment")]
    StartsTooFast(u32),
}

/// One client's input bounds: frame size and frame rate.
#[derive(Debug)]
pub struct InputGate {
    max_bytes: usize,
    frames_per_sec: u32,
    frames: TokenBucket,
}

impl InputGate {
    pub fn new(config: &TerminalConfig, now: Instant) -> InputGate {
        let rate = f64::from(config.input_frames_per_sec);
        InputGate {
            max_bytes: config.max_input_bytes,
            frames_per_sec: config.input_frames_per_sec,
            frames: TokenBucket::new(rate, 2.0 * rate, now),
        }
    }

    /// Whether a frame of `len` bytes may pass now.
    pub fn admit(&mut self, len: usize, now: Instant) -> Result<(), InputRefused> {
        if len > self.max_bytes {
            return Err(InputRefused::TooLarge(self.max_bytes));
        }
        if !self.frames.try_take(1.0, now) {
            return Err(InputRefused::TooFast(self.frames_per_sec));
        }
        Ok(())
    }
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug)]
pub(super) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Takes `amount` if there is that much.
    pub(super) fn try_take(&mut self, amount: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= amount {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }

    /// Takes `amount` on credit; returns how long to wait until the debt is paid.
    pub(super) fn take(&mut self, amount: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= amount;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::terminal::tests::small_config;

    #[test]
    fn input_frames_are_bounded_in_size_and_rate() {
        let config = small_config();
        let start = Instant::now();
        let mut gate = InputGate::new(&config, start);
        assert_eq!(gate.admit(9, start), Err(InputRefused::TooLarge(8)));
        // A burst of twice the rate passes, the next frame does not...
        for _ in 0..20 {
            assert_eq!(gate.admit(1, start), Ok(()));
        }
        assert_eq!(gate.admit(1, start), Err(InputRefused::TooFast(10)));
        // ...until time has passed.
        assert_eq!(gate.admit(1, start + Duration::from_millis(100)), Ok(()));
    }

    #[test]
    fn output_over_the_rate_waits_in_proportion() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000.0, 2000.0, start);
        assert_eq!(bucket.take(2000.0, start), Duration::ZERO);
        let wait = bucket.take(500.0, start);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        assert_eq!(
            bucket.take(500.0, start + Duration::from_millis(1000)),
            Duration::ZERO
        );
    }
}
