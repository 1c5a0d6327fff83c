//! The relay port range of one local address.
//!
//! Allocation is next-fit from a rotating cursor, so a port just freed is the last to be handed
//! out again (late packets of an ended call do not land in a new one). A port is only ours once
//! `bind` succeeds: a port some other process holds is skipped, never handed out.
use std::io;

#[derive(Debug)]
pub struct PortPool {
    min: u16,
    max: u16,
    used: Vec<bool>,
    in_use: usize,
    cursor: u16,
}

#[derive(Debug)]
pub enum AllocError {
    /// No free port (or aligned pair) could be bound in the whole range.
    Exhausted { in_use: usize, capacity: usize },
    /// Binding failed for a reason other than the port being taken.
    Bind(io::Error),
}

impl PortPool {
    pub fn new(min: u16, max: u16) -> Self {
        assert!(min <= max, "port range {min}-{max} is empty");
        Self {
            min,
            max,
            used: vec![false; usize::from(max - min) + 1],
            in_use: 0,
            cursor: min,
        }
    }

    pub fn range(&self) -> (u16, u16) {
        (self.min, self.max)
    }

    pub fn capacity(&self) -> usize {
        self.used.len()
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    fn is_free(&self, port: u16) -> bool {
        port >= self.min && port <= self.max && !self.used[usize::from(port - self.min)]
    }

    fn mark(&mut self, port: u16, used: bool) {
        let slot = &mut self.used[usize::from(port - self.min)];
        if *slot != used {
            *slot = used;
            if used {
                self.in_use += 1;
            } else {
                self.in_use -= 1;
            }
        }
    }

    /// Allocates one port, or an RTP/RTCP pair (even port and the next) when `pair` is true,
    /// calling `bind` on each port; returns the first port and what `bind` returned.
    pub fn allocate<T>(
        &mut self,
        pair: bool,
        mut bind: impl FnMut(u16) -> io::Result<T>,
    ) -> Result<(u16, Vec<T>), AllocError> {
        let count: u16 = if pair { 2 } else { 1 };
        let span = u32::from(self.max - self.min) + 1;
        let mut offset = 0u32;
        while offset < span {
            let candidate = self.min as u32 + (u32::from(self.cursor - self.min) + offset) % span;
            offset += 1;
            let first = candidate as u16;
            if pair && (!first.is_multiple_of(2) || first == u16::MAX) {
                continue;
            }
            if !(0..count).all(|i| self.is_free(first + i)) {
                continue;
            }
            let mut bound = Vec::with_capacity(usize::from(count));
            let mut taken_elsewhere = false;
            for i in 0..count {
                match bind(first + i) {
                    Ok(t) => bound.push(t),
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        taken_elsewhere = true;
                        break;
                    }
                    Err(e) => return Err(AllocError::Bind(e)),
                }
            }
            if taken_elsewhere {
                continue;
            }
            for i in 0..count {
                self.mark(first + i, true);
            }
            self.cursor = match first.checked_add(count) {
                Some(next) if next <= self.max => next,
                _ => self.min,
            };
            return Ok((first, bound));
        }
        Err(AllocError::Exhausted {
            in_use: self.in_use,
            capacity: self.capacity(),
        })
    }

    /// Marks a port as ours without binding (re-adopting state). False if it is not free.
    pub fn reserve(&mut self, port: u16) -> bool {
        if !self.is_free(port) {
            return false;
        }
        self.mark(port, true);
        true
    }

    pub fn release(&mut self, port: u16) {
        if port >= self.min && port <= self.max {
            self.mark(port, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(port: u16) -> io::Result<u16> {
        Ok(port)
    }

    #[test]
    fn pairs_are_even_aligned_and_fill_the_range() {
        let mut pool = PortPool::new(20001, 20010);
        let mut firsts = Vec::new();
        while let Ok((first, ports)) = pool.allocate(true, ok) {
            assert_eq!(first % 2, 0);
            assert_eq!(ports, vec![first, first + 1]);
            firsts.push(first);
        }
        assert_eq!(firsts, vec![20002, 20004, 20006, 20008]);
        assert!(matches!(
            pool.allocate(true, ok),
            Err(AllocError::Exhausted {
                in_use: 8,
                capacity: 10
            })
        ));
        // Single ports still fit in the odd leftovers.
        assert_eq!(pool.allocate(false, ok).unwrap().0, 20010);
        assert_eq!(pool.allocate(false, ok).unwrap().0, 20001);
        assert!(pool.allocate(false, ok).is_err());
    }

    #[test]
    fn released_ports_are_reused_last() {
        let mut pool = PortPool::new(20000, 20007);
        let (a, _) = pool.allocate(true, ok).unwrap();
        pool.release(a);
        pool.release(a + 1);
        assert_eq!(pool.allocate(true, ok).unwrap().0, 20002);
        assert_eq!(pool.in_use(), 2);
    }

    #[test]
    fn ports_taken_elsewhere_are_skipped_and_other_errors_reported() {
        let mut pool = PortPool::new(20000, 20005);
        let busy = |port: u16| {
            if port == 20001 {
                Err(io::Error::from(io::ErrorKind::AddrInUse))
            } else {
                Ok(port)
            }
        };
        assert_eq!(pool.allocate(true, busy).unwrap().0, 20002);
        assert_eq!(pool.in_use(), 2, "a pair that failed to bind is not kept");
        let broken = |_| Err::<u16, _>(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(
            pool.allocate(true, broken),
            Err(AllocError::Bind(_))
        ));
    }

    #[test]
    fn reserve_refuses_taken_and_foreign_ports() {
        let mut pool = PortPool::new(20000, 20003);
        assert!(pool.reserve(20000));
        assert!(!pool.reserve(20000));
        assert!(!pool.reserve(30000));
        assert_eq!(pool.in_use(), 1);
    }
}
