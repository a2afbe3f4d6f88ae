//! Batching: one small function with a count, a byte and a time bound.

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::mpsc::Receiver;

/// Bounds of one batch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_spans: usize,
    pub max_bytes: usize,
    /// How long the first span of a batch may wait for company.
    pub interval: Duration,
}

/// What a batch's byte bound counts.
pub trait Weight {
    fn weight(&self) -> usize;
}

impl Weight for Span {
    fn weight(&self) -> usize {
        self.encoded_len()
    }
}

/// Waits for the next batch: returns as soon as `max_spans` or `max_bytes` is
/// reached, or `interval` after the first span arrived. `None` once the
/// channel is closed and drained; a closed channel flushes what it has.
pub async fn next_batch<T: Weight>(rx: &mut Receiver<T>, limits: Limits) -> Option<Vec<T>> {
    let first = rx.recv().await?;
    let mut bytes = first.weight();
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + limits.interval;
    while batch.len() < limits.max_spans && bytes < limits.max_bytes {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(span)) => {
                bytes += span.weight();
                batch.push(span);
            }
            Ok(None) | Err(_) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn span(n: u8, attr_len: usize) -> Span {
        Span {
            trace_id: vec![n; 16],
            name: "x".repeat(attr_len),
            ..Default::default()
        }
    }

    const LIMITS: Limits = Limits {
        max_spans: 3,
        max_bytes: 1000,
        interval: Duration::from_secs(1),
    };

    #[tokio::test(start_paused = true)]
    async fn count_bound() {
        let (tx, mut rx) = mpsc::channel(10);
        for i in 0..5 {
            tx.send(span(i, 1)).await.unwrap();
        }
        assert_eq!(next_batch(&mut rx, LIMITS).await.unwrap().len(), 3);
        assert_eq!(next_batch(&mut rx, LIMITS).await.unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn byte_bound() {
        let (tx, mut rx) = mpsc::channel(10);
        tx.send(span(1, 700)).await.unwrap();
        tx.send(span(2, 700)).await.unwrap();
        tx.send(span(3, 10)).await.unwrap();
        assert_eq!(next_batch(&mut rx, LIMITS).await.unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn time_bound() {
        let (tx, mut rx) = mpsc::channel(10);
        tx.send(span(1, 1)).await.unwrap();
        let start = tokio::time::Instant::now();
        let batch = next_batch(&mut rx, LIMITS).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(start.elapsed(), LIMITS.interval);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn close_flushes_then_ends() {
        let (tx, mut rx) = mpsc::channel(10);
        tx.send(span(1, 1)).await.unwrap();
        drop(tx);
        assert_eq!(next_batch(&mut rx, LIMITS).await.unwrap().len(), 1);
        assert!(next_batch(&mut rx, LIMITS).await.is_none());
    }
}
