//! Ranking: one list per mode, and hybrid search as weighted reciprocal rank fusion.

use std::collections::HashMap;

use super::ports::{TextHit, VectorHit};

/// The constant of reciprocal rank fusion (the usual 60: rank 1 and rank 2 differ little).
pub const RRF_K: f32 = 60.0;

/// One hit, before it is shown.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    /// Chunk id.
    pub chunk: uuid::Uuid,
    /// The score of the mode (0 to 1).
    pub score: f32,
    /// Cosine similarity, when the vector search found it.
    pub vector_score: Option<f32>,
    /// Full-text rank (0 to 1), when the text search found it.
    pub text_score: Option<f32>,
}

/// The vector search's hits as ranked hits.
#[must_use]
pub fn from_vectors(hits: &[VectorHit]) -> Vec<Ranked> {
    hits.iter()
        .map(|h| Ranked {
            chunk: h.chunk,
            score: h.score,
            vector_score: Some(h.score),
            text_score: None,
        })
        .collect()
}

/// The text search's hits as ranked hits.
#[must_use]
pub fn from_text(hits: &[TextHit]) -> Vec<Ranked> {
    hits.iter()
        .map(|h| Ranked {
            chunk: h.chunk,
            score: h.score,
            vector_score: None,
            text_score: Some(h.score),
        })
        .collect()
}

/// Weighted reciprocal rank fusion: `w/(k+rank_v) + (1-w)/(k+rank_t)`, divided by its largest
/// possible value so that 1 means first in both lists. Ties keep the vector order.
#[must_use]
pub fn fuse(vector: &[VectorHit], text: &[TextHit], vector_weight: f32) -> Vec<Ranked> {
    let w_v = vector_weight.clamp(0.0, 1.0);
    let w_t = 1.0 - w_v;
    let best = w_v / (RRF_K + 1.0) + w_t / (RRF_K + 1.0);
    let mut order: Vec<uuid::Uuid> = Vec::new();
    let mut by_chunk: HashMap<uuid::Uuid, Ranked> = HashMap::new();
    let rank_score = |rank: usize, weight: f32| {
        let rank = u16::try_from(rank + 1).map_or(f32::from(u16::MAX), f32::from);
        weight / (RRF_K + rank)
    };
    for (rank, hit) in vector.iter().enumerate() {
        order.push(hit.chunk);
        by_chunk.insert(
            hit.chunk,
            Ranked {
                chunk: hit.chunk,
                score: rank_score(rank, w_v),
                vector_score: Some(hit.score),
                text_score: None,
            },
        );
    }
    for (rank, hit) in text.iter().enumerate() {
        let add = rank_score(rank, w_t);
        let entry = by_chunk.entry(hit.chunk).or_insert_with(|| {
            order.push(hit.chunk);
            Ranked {
                chunk: hit.chunk,
                score: 0.0,
                vector_score: None,
                text_score: None,
            }
        });
        entry.score += add;
        entry.text_score = Some(hit.score);
    }
    let mut out: Vec<Ranked> = order
        .into_iter()
        .filter_map(|id| by_chunk.remove(&id))
        .map(|mut r| {
            r.score = if best > 0.0 {
                (r.score / best).min(1.0)
            } else {
                0.0
            };
            r
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::document::DocumentId;

    fn v(id: u128, score: f32) -> VectorHit {
        VectorHit {
            chunk: uuid::Uuid::from_u128(id),
            document: DocumentId::from_uuid(uuid::Uuid::nil()),
            score,
        }
    }

    fn t(id: u128, score: f32) -> TextHit {
        TextHit {
            chunk: uuid::Uuid::from_u128(id),
            score,
        }
    }

    #[test]
    fn first_in_both_lists_scores_one() {
        let fused = fuse(&[v(1, 0.9), v(2, 0.8)], &[t(1, 0.5), t(3, 0.4)], 0.7);
        assert_eq!(fused[0].chunk, uuid::Uuid::from_u128(1));
        assert!((fused[0].score - 1.0).abs() < 1e-6);
        assert_eq!(fused[0].vector_score, Some(0.9));
        assert_eq!(fused[0].text_score, Some(0.5));
        let ids: Vec<u128> = fused.iter().map(|r| r.chunk.as_u128()).collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn the_weight_decides_between_the_lists() {
        let text_heavy = fuse(&[v(1, 0.9)], &[t(2, 0.5)], 0.2);
        assert_eq!(text_heavy[0].chunk.as_u128(), 2);
        let vector_heavy = fuse(&[v(1, 0.9)], &[t(2, 0.5)], 0.8);
        assert_eq!(vector_heavy[0].chunk.as_u128(), 1);
    }
}
