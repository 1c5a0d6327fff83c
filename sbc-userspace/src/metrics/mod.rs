//! Prometheus metrics: `GET /metrics` on the admin listener.
mod counter_map;
mod exposition;
mod histogram;

pub use counter_map::CounterMap;
pub use exposition::{Exposition, Labels, NO_LABELS};
pub use histogram::{Histogram, HistogramMap, HistogramSnapshot};
