//! The reorder window: packets of all capture threads, released in timestamp order.
use super::{PipelineError, queue::Batch};

/// Packets of all capture threads, released in timestamp order once older than the merge
/// delay. Each fanout member's packets arrive in order, but members (and interfaces)
/// interleave; without this the file's timestamps would jump back and forth.
#[derive(Default)]
pub(super) struct Reorder {
    /// Batches with the index of their first packet not yet released.
    batches: Vec<(Batch, usize)>,
    order: Vec<(u64, u32, u32)>,
}

impl Reorder {
    pub(super) fn push(&mut self, b: Batch) {
        if !b.pkts.is_empty() {
            self.batches.push((b, 0));
        }
    }

    /// Calls `f` for every packet stamped at or before `horizon`, oldest first.
    pub(super) fn release(
        &mut self,
        horizon: u64,
        mut f: impl FnMut(&Batch, usize) -> Result<(), PipelineError>,
    ) -> Result<(), PipelineError> {
        self.order.clear();
        for (bi, (b, next)) in self.batches.iter().enumerate() {
            for (pi, p) in b.pkts.iter().enumerate().skip(*next) {
                if p.0 > horizon {
                    break;
                }
                self.order.push((p.0, bi as u32, pi as u32));
            }
        }
        if self.order.is_empty() {
            return Ok(());
        }
        // Equal stamps keep their arrival order (batch, then position).
        self.order.sort_unstable();
        let mut result = Ok(());
        for &(_, bi, pi) in &self.order {
            if let Some((b, next)) = self.batches.get_mut(bi as usize) {
                // Released packets are a prefix of each batch, whatever order they go in.
                *next = (*next).max(pi as usize + 1);
                result = f(b, pi as usize);
                if result.is_err() {
                    break;
                }
            }
        }
        self.batches.retain(|(b, next)| *next < b.pkts.len());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Direction, Packet};

    fn batch(iface: u32, stamps: &[u64]) -> Batch {
        let mut b = Batch::new(iface);
        for &ts in stamps {
            b.push(&Packet {
                ts_ns: ts,
                interface: iface,
                orig_len: 1,
                data: &[0],
                direction: Direction::Unknown,
                pid: 0,
                tid: 0,
            });
        }
        b
    }

    #[test]
    fn reorder_releases_due_packets_once_in_time_order() {
        let mut r = Reorder::default();
        r.push(batch(0, &[10, 30, 50, 70]));
        r.push(batch(1, &[20, 40, 60]));
        r.push(batch(0, &[35, 32]));
        let mut got = Vec::new();
        r.release(45, |b, i| {
            got.push(b.pkts[i].0);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![10, 20, 30, 32, 35, 40]);
        got.clear();
        r.release(u64::MAX, |b, i| {
            got.push(b.pkts[i].0);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            got,
            vec![50, 60, 70],
            "nothing released twice, nothing lost"
        );
        assert!(r.batches.is_empty());
    }
}
