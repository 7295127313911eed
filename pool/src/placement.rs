//! Where sessions go: the pool's GPUs, who holds them, and the queue. Pure bookkeeping, no I/O,
//! so every rule is tested alone.
//!
//! Rules: a session's GPUs all come from one member (its devices are that member's, renumbered
//! 0..N-1); members with fewer sessions are chosen first (spread), then the placement that
//! leaves the least free memory (best fit); at most `per_gpu` sessions share a GPU, and the
//! memory a session asks for is reserved on each GPU it gets (split evenly), so one session can
//! never starve another. When nothing fits, requests wait in strict FIFO order. A request that
//! no known member could satisfy even when idle fails at once.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// A member, by its position in the pool's member list (stable for the pool's life).
pub type MemberId = usize;

/// One GPU of a member.
#[derive(Debug, Clone)]
pub struct Gpu {
    pub index: u32,
    pub total_mem: u64,
    pub sessions: u32,
    pub reserved: u64,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub up: bool,
    /// Known once the member has answered at least once.
    pub gpus: Vec<Gpu>,
}

/// What a session asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub gpus: u32,
    pub memory: u64,
    /// Members one virtual GPU spreads over, one GPU each (1: an ordinary session, all its
    /// GPUs on one member).
    pub members: u32,
}

impl Want {
    fn per_gpu_memory(&self) -> u64 {
        self.memory.div_ceil(self.gpus.max(1) as u64)
    }
}

/// Where a session was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub member: MemberId,
    /// The member's device indices, in the order the client sees them.
    pub gpus: Vec<u32>,
    pub memory_per_gpu: u64,
    /// A virtual GPU's other members, with the GPU each gives it.
    pub also: Vec<(MemberId, u32)>,
}

impl Placement {
    /// Every (member, GPU) the placement holds.
    pub fn slots(&self) -> impl Iterator<Item = (MemberId, u32)> + '_ {
        self.gpus
            .iter()
            .map(|&g| (self.member, g))
            .chain(self.also.iter().copied())
    }
}

/// A session's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Placed(Placement),
    /// Waiting; 1 is next.
    Queued {
        place: u32,
    },
}

#[derive(Debug)]
struct Waiting {
    id: SessionId,
    want: Want,
    since: Instant,
}

#[derive(Debug)]
struct Held {
    placement: Placement,
    want: Want,
    since: Instant,
}

/// The pool's GPUs and sessions.
#[derive(Debug)]
pub struct Scheduler {
    per_gpu: u32,
    members: Vec<Member>,
    queue: VecDeque<Waiting>,
    held: BTreeMap<SessionId, Held>,
    next: u64,
}

impl Scheduler {
    pub fn new(per_gpu: u32) -> Self {
        Self {
            per_gpu: per_gpu.max(1),
            members: Vec::new(),
            queue: VecDeque::new(),
            held: BTreeMap::new(),
            next: 1,
        }
    }

    /// Adds a member (not up until it answers).
    pub fn add_member(&mut self, name: String) -> MemberId {
        self.members.push(Member {
            name,
            up: false,
            gpus: Vec::new(),
        });
        self.members.len() - 1
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member answered: its GPUs (index, memory) as it reports them now.
    pub fn member_up(&mut self, id: MemberId, gpus: &[(u32, u64)]) {
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        let mut fresh: Vec<Gpu> = gpus
            .iter()
            .map(|&(index, total_mem)| Gpu {
                index,
                total_mem,
                sessions: 0,
                reserved: 0,
            })
            .collect();
        // Sessions still held there keep their reservations.
        for h in self.held.values() {
            for (_, g) in h.placement.slots().filter(|(m, _)| *m == id) {
                if let Some(f) = fresh.iter_mut().find(|f| f.index == g) {
                    f.sessions += 1;
                    f.reserved += h.placement.memory_per_gpu;
                }
            }
        }
        m.gpus = fresh;
        m.up = true;
        self.assign();
    }

    /// The member went silent: nothing new goes there (its sessions fail on their own).
    pub fn member_down(&mut self, id: MemberId) {
        if let Some(m) = self.members.get_mut(id) {
            m.up = false;
        }
    }

    /// Why no known member could ever satisfy `want`, or `None` if one could (or if no member
    /// has answered yet, so nothing is known).
    pub fn impossible(&self, want: Want) -> Option<String> {
        if want.gpus == 0 {
            return Some("a session needs at least one GPU".into());
        }
        let known: Vec<&Member> = self.members.iter().filter(|m| !m.gpus.is_empty()).collect();
        if known.is_empty() {
            return None;
        }
        let per = want.per_gpu_memory();
        if want.members > 1 {
            let able = known
                .iter()
                .filter(|m| m.gpus.iter().any(|g| g.total_mem >= per))
                .count();
            return (able < want.members as usize).then(|| {
                format!(
                    "a virtual GPU over {} members asked for, but this pool has {able} member(s) \
                     with a GPU of {} MiB",
                    want.members,
                    per >> 20
                )
            });
        }
        let most_gpus = known.iter().map(|m| m.gpus.len()).max().unwrap_or(0);
        if known
            .iter()
            .any(|m| m.gpus.iter().filter(|g| g.total_mem >= per).count() >= want.gpus as usize)
        {
            return None;
        }
        let biggest = known
            .iter()
            .flat_map(|m| m.gpus.iter().map(|g| g.total_mem))
            .max()
            .unwrap_or(0);
        Some(if want.gpus as usize > most_gpus {
            format!(
                "{} GPUs asked for, but no member of this pool has more than {most_gpus}",
                want.gpus
            )
        } else if per > biggest {
            format!(
                "{} MiB of memory per GPU asked for, but the largest GPU in this pool has {} MiB",
                per >> 20,
                biggest >> 20
            )
        } else {
            format!(
                "no member of this pool has {} GPUs with {} MiB each",
                want.gpus,
                per >> 20
            )
        })
    }

    /// Asks for GPUs: placed at once, or queued; `Err` if it can never be satisfied.
    pub fn request(&mut self, want: Want) -> Result<SessionId, String> {
        if let Some(why) = self.impossible(want) {
            return Err(why);
        }
        let id = SessionId(self.next);
        self.next += 1;
        self.queue.push_back(Waiting {
            id,
            want,
            since: Instant::now(),
        });
        self.assign();
        Ok(id)
    }

    /// Where `id` stands; `None` if it is unknown (released).
    pub fn state(&self, id: SessionId) -> Option<State> {
        if let Some(h) = self.held.get(&id) {
            return Some(State::Placed(h.placement.clone()));
        }
        let pos = self.queue.iter().position(|w| w.id == id)?;
        Some(State::Queued {
            place: pos as u32 + 1,
        })
    }

    /// The session ended or stopped waiting: its GPUs (or its place) go to others.
    pub fn release(&mut self, id: SessionId) {
        self.queue.retain(|w| w.id != id);
        if let Some(h) = self.held.remove(&id) {
            self.free(&h.placement);
        }
        self.assign();
    }

    /// The member a session was placed on did not take it: its GPUs are given back and it
    /// waits again at the head of the queue (it has had its turn).
    pub fn requeue(&mut self, id: SessionId) {
        if let Some(h) = self.held.remove(&id) {
            self.free(&h.placement);
            self.queue.push_front(Waiting {
                id,
                want: h.want,
                since: h.since,
            });
        }
        self.assign();
    }

    fn free(&mut self, p: &Placement) {
        for (member, g) in p.slots() {
            if let Some(gpu) = self.gpu_mut(member, g) {
                gpu.sessions = gpu.sessions.saturating_sub(1);
                gpu.reserved = gpu.reserved.saturating_sub(p.memory_per_gpu);
            }
        }
    }

    fn gpu_mut(&mut self, member: MemberId, index: u32) -> Option<&mut Gpu> {
        self.members
            .get_mut(member)?
            .gpus
            .iter_mut()
            .find(|x| x.index == index)
    }

    /// Places waiting sessions in order while the head of the queue fits.
    fn assign(&mut self) {
        while let Some(head) = self.queue.front() {
            let Some(p) = self.fit(head.want) else {
                return;
            };
            let Some(w) = self.queue.pop_front() else {
                return;
            };
            for (member, g) in p.slots().collect::<Vec<_>>() {
                if let Some(gpu) = self.gpu_mut(member, g) {
                    gpu.sessions += 1;
                    gpu.reserved += p.memory_per_gpu;
                }
            }
            self.held.insert(
                w.id,
                Held {
                    placement: p,
                    want: w.want,
                    since: Instant::now(),
                },
            );
        }
    }

    /// The best placement for `want` now: fewest sessions on the member first, then the least
    /// free memory left over, then the lowest member number.
    fn fit(&self, want: Want) -> Option<Placement> {
        if want.members > 1 {
            return self.fit_spread(want);
        }
        let per = want.per_gpu_memory();
        let mut best: Option<((u32, u64, usize), Placement)> = None;
        for (id, m) in self.members.iter().enumerate().filter(|(_, m)| m.up) {
            let mut free: Vec<&Gpu> = m
                .gpus
                .iter()
                .filter(|g| {
                    g.sessions < self.per_gpu && g.total_mem - g.reserved.min(g.total_mem) >= per
                })
                .collect();
            if free.len() < want.gpus as usize {
                continue;
            }
            // Best fit within the member: the GPUs with the least room that still fit.
            free.sort_by_key(|g| (g.total_mem - g.reserved, g.index));
            let chosen: Vec<&Gpu> = free[..want.gpus as usize].to_vec();
            let load: u32 = m.gpus.iter().map(|g| g.sessions).sum();
            let left: u64 = chosen.iter().map(|g| g.total_mem - g.reserved - per).sum();
            let key = (load, left, id);
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                let mut gpus: Vec<u32> = chosen.iter().map(|g| g.index).collect();
                gpus.sort_unstable();
                best = Some((
                    key,
                    Placement {
                        member: id,
                        gpus,
                        memory_per_gpu: per,
                        also: Vec::new(),
                    },
                ));
            }
        }
        best.map(|(_, p)| p)
    }

    /// A virtual GPU: one GPU on each of `want.members` distinct members, the least loaded
    /// first; within a member, the GPU with the least room that fits.
    fn fit_spread(&self, want: Want) -> Option<Placement> {
        let per = want.memory;
        let mut candidates: Vec<((u32, u64, usize), u32)> = Vec::new();
        for (id, m) in self.members.iter().enumerate().filter(|(_, m)| m.up) {
            let best = m
                .gpus
                .iter()
                .filter(|g| {
                    g.sessions < self.per_gpu && g.total_mem - g.reserved.min(g.total_mem) >= per
                })
                .min_by_key(|g| (g.total_mem - g.reserved, g.index));
            if let Some(g) = best {
                let load: u32 = m.gpus.iter().map(|g| g.sessions).sum();
                candidates.push(((load, g.total_mem - g.reserved - per, id), g.index));
            }
        }
        if candidates.len() < want.members as usize {
            return None;
        }
        candidates.sort();
        let mut chosen = candidates[..want.members as usize].iter();
        let &((_, _, member), gpu) = chosen.next()?;
        Some(Placement {
            member,
            gpus: vec![gpu],
            memory_per_gpu: per,
            also: chosen.map(|&((_, _, m), g)| (m, g)).collect(),
        })
    }

    /// Sessions placed: (id, placement, memory asked for, age).
    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, &Placement, u64, Duration)> {
        self.held
            .iter()
            .map(|(id, h)| (*id, &h.placement, h.want.memory, h.since.elapsed()))
    }

    /// Queue length and the oldest wait.
    pub fn queue(&self) -> (usize, Option<Duration>) {
        (
            self.queue.len(),
            self.queue.front().map(|w| w.since.elapsed()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    fn pool(members: &[&[u64]], per_gpu: u32) -> Scheduler {
        let mut s = Scheduler::new(per_gpu);
        for (i, gpus) in members.iter().enumerate() {
            let id = s.add_member(format!("m{i}"));
            let g: Vec<(u32, u64)> = gpus
                .iter()
                .enumerate()
                .map(|(j, &m)| (j as u32, m))
                .collect();
            s.member_up(id, &g);
        }
        s
    }

    fn want(gpus: u32, memory: u64) -> Want {
        Want {
            gpus,
            memory,
            members: 1,
        }
    }

    fn placed(s: &Scheduler, id: SessionId) -> Placement {
        match s.state(id) {
            Some(State::Placed(p)) => p,
            other => panic!("{id:?} is {other:?}"),
        }
    }

    #[test]
    fn sessions_spread_over_members_first() {
        let mut s = pool(&[&[4 * G, 4 * G], &[4 * G, 4 * G]], 1);
        let a = s.request(want(1, 0)).unwrap();
        let b = s.request(want(1, 0)).unwrap();
        assert_ne!(placed(&s, a).member, placed(&s, b).member);
        let c = s.request(want(1, 0)).unwrap();
        let d = s.request(want(1, 0)).unwrap();
        let mut used: Vec<(usize, u32)> = [a, b, c, d]
            .iter()
            .map(|&i| {
                let p = placed(&s, i);
                (p.member, p.gpus[0])
            })
            .collect();
        used.sort();
        used.dedup();
        assert_eq!(used.len(), 4, "four sessions, four GPUs");
    }

    #[test]
    fn best_fit_by_free_memory_within_the_spread() {
        // Two members, equally loaded: the session goes where the least memory is left over.
        let mut s = pool(&[&[8 * G], &[3 * G]], 4);
        let a = s.request(want(1, 2 * G)).unwrap();
        assert_eq!(placed(&s, a).member, 1);
    }

    #[test]
    fn a_third_session_queues_and_runs_when_one_finishes() {
        let mut s = pool(&[&[G], &[G]], 1);
        let a = s.request(want(1, 0)).unwrap();
        let _b = s.request(want(1, 0)).unwrap();
        let c = s.request(want(1, 0)).unwrap();
        let d = s.request(want(1, 0)).unwrap();
        assert_eq!(s.state(c), Some(State::Queued { place: 1 }));
        assert_eq!(s.state(d), Some(State::Queued { place: 2 }));
        assert_eq!(s.queue().0, 2);
        let freed = placed(&s, a);
        s.release(a);
        assert_eq!(
            placed(&s, c),
            freed,
            "the head of the queue gets the freed GPU"
        );
        assert_eq!(s.state(d), Some(State::Queued { place: 1 }));
        s.release(d);
        assert_eq!(s.state(d), None);
        assert_eq!(s.queue().0, 0);
    }

    #[test]
    fn memory_is_reserved_so_sessions_cannot_starve_each_other() {
        let mut s = pool(&[&[4 * G]], 8);
        let a = s.request(want(1, 3 * G)).unwrap();
        let b = s.request(want(1, 2 * G)).unwrap();
        assert!(matches!(s.state(a), Some(State::Placed(_))));
        assert_eq!(
            s.state(b),
            Some(State::Queued { place: 1 }),
            "only 1 GiB is left"
        );
        let c = s.request(want(1, G)).unwrap();
        assert_eq!(
            s.state(c),
            Some(State::Queued { place: 2 }),
            "strict FIFO: no overtaking the head"
        );
        s.release(a);
        assert!(matches!(s.state(b), Some(State::Placed(_))));
        assert!(matches!(s.state(c), Some(State::Placed(_))));
    }

    #[test]
    fn impossible_requests_fail_at_once_with_a_reason() {
        let mut s = pool(&[&[4 * G, 4 * G], &[8 * G]], 1);
        let e = s.request(want(3, 0)).unwrap_err();
        assert!(e.contains("3 GPUs") && e.contains("more than 2"), "{e}");
        let e = s.request(want(1, 16 * G)).unwrap_err();
        assert!(e.contains("16384 MiB") && e.contains("8192 MiB"), "{e}");
        let e = s.request(want(2, 16 * G)).unwrap_err();
        assert!(
            e.contains("no member of this pool has 2 GPUs with 8192 MiB"),
            "{e}"
        );
        assert!(s.request(want(0, 0)).is_err());
        assert!(
            s.request(want(2, 8 * G)).is_ok(),
            "two 4 GiB GPUs hold 8 GiB"
        );
    }

    #[test]
    fn a_missing_member_gets_nothing_new_and_keeps_its_reservations_when_back() {
        let mut s = pool(&[&[G], &[G]], 1);
        let a = s.request(want(1, 0)).unwrap();
        let on = placed(&s, a).member;
        s.member_down(1 - on);
        let b = s.request(want(1, 0)).unwrap();
        assert_eq!(s.state(b), Some(State::Queued { place: 1 }));
        s.member_up(1 - on, &[(0, G)]);
        assert_eq!(placed(&s, b).member, 1 - on, "it rejoins by itself");
        // The member holding `a` restarts: `a` still counts there until released.
        s.member_up(on, &[(0, G)]);
        let c = s.request(want(1, 0)).unwrap();
        assert_eq!(s.state(c), Some(State::Queued { place: 1 }));
        s.release(a);
        assert_eq!(placed(&s, c).member, on);
    }

    #[test]
    fn a_session_its_member_refused_waits_first_in_line_elsewhere() {
        let mut s = pool(&[&[G], &[G]], 1);
        let a = s.request(want(1, 0)).unwrap();
        let b = s.request(want(1, 0)).unwrap();
        let c = s.request(want(1, 0)).unwrap();
        let bad = placed(&s, a).member;
        s.member_down(bad);
        s.requeue(a);
        assert_eq!(s.state(a), Some(State::Queued { place: 1 }), "ahead of c");
        assert_eq!(s.state(c), Some(State::Queued { place: 2 }));
        s.release(b);
        assert_eq!(placed(&s, a).member, 1 - bad);
    }

    #[test]
    fn with_no_member_known_yet_requests_wait() {
        let mut s = Scheduler::new(1);
        let m = s.add_member("later".into());
        let a = s.request(want(1, 0)).unwrap();
        assert_eq!(s.state(a), Some(State::Queued { place: 1 }));
        s.member_up(m, &[(0, G)]);
        assert_eq!(placed(&s, a).member, m);
    }

    #[test]
    fn a_virtual_gpu_takes_one_gpu_on_each_of_distinct_members() {
        let mut s = pool(&[&[4 << 30, 8 << 30], &[8 << 30], &[2 << 30]], 1);
        let spread = |m| Want {
            gpus: 1,
            memory: 3 << 30,
            members: m,
        };
        let id = s.request(spread(2)).unwrap();
        let p = placed(&s, id);
        let mut slots: Vec<_> = p.slots().collect();
        slots.sort();
        // Member 2's GPU is too small; member 0 gives its tighter fit.
        assert_eq!(slots, [(0, 0), (1, 0)]);
        // Only member 0's second GPU is left with room: a second virtual GPU waits.
        let next = s.request(spread(2)).unwrap();
        assert_eq!(s.state(next), Some(State::Queued { place: 1 }));
        s.release(id);
        assert!(matches!(s.state(next), Some(State::Placed(_))));
        let why = s.impossible(spread(3)).unwrap();
        assert!(why.contains("2 member(s)"), "{why}");
    }

    #[test]
    fn multi_gpu_sessions_take_gpus_of_one_member() {
        let mut s = pool(&[&[G, G, G], &[G]], 1);
        let a = s.request(want(2, 0)).unwrap();
        let p = placed(&s, a);
        assert_eq!((p.member, p.gpus.len()), (0, 2));
        let b = s.request(want(2, 0)).unwrap();
        assert_eq!(s.state(b), Some(State::Queued { place: 1 }));
    }
}
