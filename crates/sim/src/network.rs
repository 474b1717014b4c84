//! The network between the sites and the control plane: a one-way latency per site with some
//! jitter, random loss, and partitions that cut sites off. A lost message is simply never
//! delivered; the sender finds out the way a real agent does, when its request times out.

use rand::Rng;
use rand::rngs::StdRng;

use crate::time::{MILLISECOND, Time};

#[derive(Debug)]
pub struct Network {
    /// Each site's base one-way latency.
    latency: Vec<Time>,
    /// A site is cut off while the clock is before this.
    cut_until: Vec<Time>,
    loss: f64,
    /// Random loss and replays stop here (the healing phase).
    faults_until: Time,
    replay: f64,
}

impl Network {
    pub fn new(
        sites: usize,
        loss: f64,
        replay: f64,
        faults_until: Time,
        rng: &mut StdRng,
    ) -> Network {
        Network {
            latency: (0..sites)
                .map(|_| rng.gen_range(10 * MILLISECOND..=150 * MILLISECOND))
                .collect(),
            cut_until: vec![0; sites],
            loss,
            faults_until,
            replay,
        }
    }

    /// The time one message takes to or from `site`.
    pub fn delay(&self, site: usize, rng: &mut StdRng) -> Time {
        let base = self.latency[site];
        base + rng.gen_range(0..=base / 4)
    }

    pub fn is_cut(&self, site: usize, now: Time) -> bool {
        now < self.cut_until[site]
    }

    /// Cuts `site` off until `until`.
    pub fn cut(&mut self, site: usize, until: Time) {
        self.cut_until[site] = self.cut_until[site].max(until);
    }

    /// Whether a message to or from `site` sent now is lost.
    pub fn loses(&self, site: usize, now: Time, rng: &mut StdRng) -> bool {
        self.is_cut(site, now) || (now < self.faults_until && rng.gen_bool(self.loss))
    }

    /// Whether a manifest answer sent now is replaced by a replayed older one.
    pub fn replays(&self, now: Time, rng: &mut StdRng) -> bool {
        now < self.faults_until && rng.gen_bool(self.replay)
    }
}
