//! When is a job deadlocked? When every rank that is still alive sleeps
//! in a call that waits for other ranks, has read everything sent to it,
//! and has not moved between two looks at the world some time apart.
//!
//! That is sound: a sleeping rank wakes only for a message or a death.
//! Nothing is in flight (its rings are empty), no rank runs that could
//! send one (all sleep), and none has left its call between the two looks
//! (its slot's epoch changes whenever it publishes or leaves a wait). A
//! rank that ended between the looks is a change too: the ranks waiting on
//! it fail on their own (`RankLostError`), and the next look decides for
//! the rest.
//!
//! Ranks that are all at the exit barrier are not deadlocked (they are
//! leaving); some at the barrier and others waiting for them are.

use super::world::{state, SlotView};

/// Whether `now` shows a deadlock, given the look `before` it.
pub fn deadlocked(before: &[SlotView], now: &[SlotView]) -> bool {
    if before.len() != now.len() {
        return false;
    }
    let mut waiting = false;
    for (b, n) in before.iter().zip(now) {
        match (&b.ended, &n.ended) {
            (Some(_), Some(_)) => continue,
            (None, None) => {}
            _ => return false,
        }
        let asleep = n.state == state::BLOCKED || n.state == state::FINALIZING;
        if !asleep || n.state != b.state || n.epoch != b.epoch || !n.drained || !b.drained {
            return false;
        }
        waiting |= n.state == state::BLOCKED;
    }
    waiting
}

/// The epochs of a look: the same epochs mean nobody moved.
pub fn epochs(views: &[SlotView]) -> Vec<(u32, bool)> {
    views.iter().map(|v| (v.epoch, v.ended.is_some())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spmd::world::{Ended, WaitInfo};

    fn view(state: u32, epoch: u32) -> SlotView {
        SlotView {
            pid: 1,
            state,
            epoch,
            ended: None,
            wait: WaitInfo::default(),
            drained: true,
        }
    }

    fn ended(mut v: SlotView) -> SlotView {
        v.ended = Some(Ended {
            order: 1,
            code: Some(0),
            signal: None,
            finalized: false,
        });
        v
    }

    #[test]
    fn two_ranks_waiting_for_each_other() {
        let look = vec![view(state::BLOCKED, 4), view(state::BLOCKED, 6)];
        assert!(deadlocked(&look, &look));
    }

    #[test]
    fn a_running_rank_or_a_move_is_no_deadlock() {
        let before = vec![view(state::BLOCKED, 4), view(state::BLOCKED, 6)];
        let running = vec![view(state::BLOCKED, 4), view(state::RUNNING, 8)];
        assert!(!deadlocked(&before, &running));
        let moved = vec![view(state::BLOCKED, 4), view(state::BLOCKED, 8)];
        assert!(!deadlocked(&before, &moved));
    }

    #[test]
    fn a_message_in_flight_is_no_deadlock() {
        let before = vec![view(state::BLOCKED, 4), view(state::BLOCKED, 6)];
        let mut now = before.clone();
        now[1].drained = false;
        assert!(!deadlocked(&before, &now));
    }

    #[test]
    fn all_at_the_exit_barrier_is_no_deadlock_but_one_waiting_for_them_is() {
        let leaving = vec![view(state::FINALIZING, 2), view(state::FINALIZING, 2)];
        assert!(!deadlocked(&leaving, &leaving));
        let stuck = vec![view(state::FINALIZING, 2), view(state::BLOCKED, 2)];
        assert!(deadlocked(&stuck, &stuck));
    }

    #[test]
    fn a_fresh_death_waits_for_the_next_look() {
        let before = vec![
            view(state::BLOCKED, 4),
            view(state::BLOCKED, 6),
            view(state::BLOCKED, 2),
        ];
        let mut now = before.clone();
        now[2] = ended(now[2].clone());
        assert!(!deadlocked(&before, &now));
        assert!(
            deadlocked(&now, &now),
            "the survivors still wait for each other"
        );
        let all_gone: Vec<_> = now.iter().cloned().map(ended).collect();
        assert!(!deadlocked(&all_gone, &all_gone));
    }
}
