// Test support: matching our detections against torchvision's, with near-ties reported rather
// than hidden. A detection whose fate hinges on a near-tie (its score at a threshold or at the
// top-N cut, or its IoU with a same-label detection at the NMS threshold) may legitimately differ
// between two float implementations; anything else unmatched is a failure.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace fpn::testing {

struct ScoredBox {
  std::array<float, 4> box;
  float score;
  std::int64_t label;
};

inline double iou(const std::array<float, 4>& a, const std::array<float, 4>& b) {
  const double area_a = double(a[2] - a[0]) * (a[3] - a[1]);
  const double area_b = double(b[2] - b[0]) * (b[3] - b[1]);
  const double w = std::max(0.0, double(std::min(a[2], b[2])) - std::max(a[0], b[0]));
  const double h = std::max(0.0, double(std::min(a[3], b[3])) - std::max(a[1], b[1]));
  const double inter = w * h;
  const double uni = area_a + area_b - inter;
  return uni > 0 ? inter / uni : (a == b ? 1.0 : 0.0);
}

struct MatchCriteria {
  double min_iou = 0.99;
  double max_score_diff = 1e-3;
  // Where ties are looked for.
  double score_thresh = 0.05;
  double nms_thresh = 0.5;
  std::size_t max_count = 100;
  double tie_score = 1e-4;  // |score - threshold or cut| within this is a near-tie
  double tie_iou = 1e-3;    // |IoU - nms_thresh| within this is a near-tie
  bool per_label_nms = true;
  // Whether a box one side keeps and the other does not is a tie when the other side also keeps
  // a box the first does not with exactly the same score (within float rounding): a map with
  // repeated values (nearest-upsampled, as the FPN without laterals) gives several locations one
  // logit, and which of them top-k and NMS keep is the order of equal scores, which torch leaves
  // unspecified. What NMS then keeps around them may differ too; the caller bounds that.
  bool equal_score_ties = false;
};

struct MatchReport {
  std::vector<std::pair<std::size_t, std::size_t>> pairs;  // (reference, ours)
  std::vector<std::string> ties;
  std::vector<std::string> failures;
  std::string summary() const {
    std::ostringstream out;
    out << pairs.size() << " matched, " << ties.size() << " near-ties, " << failures.size()
        << " failures";
    for (const auto& t : ties) out << "\n  tie: " << t;
    for (const auto& f : failures) out << "\n  FAIL: " << f;
    return out.str();
  }
};

inline std::string describe(const ScoredBox& d) {
  std::ostringstream out;
  out << "label " << d.label << " score " << d.score << " box [" << d.box[0] << ", " << d.box[1]
      << ", " << d.box[2] << ", " << d.box[3] << "]";
  return out.str();
}

// Why `d`, kept by one side only, may be a near-tie; empty if it is not.
inline std::string near_tie(const ScoredBox& d, const std::vector<ScoredBox>& reference,
                            const std::vector<ScoredBox>& ours, const MatchCriteria& c) {
  if (std::abs(d.score - c.score_thresh) <= c.tie_score) return "score at the threshold";
  for (const auto* list : {&reference, &ours}) {
    if (list->size() >= c.max_count &&
        std::abs(d.score - list->back().score) <= c.tie_score) {
      return "score at the top-" + std::to_string(c.max_count) + " cut";
    }
    for (const ScoredBox& other : *list) {
      if (c.per_label_nms && other.label != d.label) continue;
      if (std::abs(iou(other.box, d.box) - c.nms_thresh) <= c.tie_iou) {
        return "IoU at the NMS threshold with " + describe(other);
      }
    }
  }
  return "";
}

inline MatchReport match_detections(const std::vector<ScoredBox>& reference,
                                    const std::vector<ScoredBox>& ours, const MatchCriteria& c) {
  MatchReport report;
  std::vector<bool> used(ours.size(), false);
  std::vector<bool> matched_reference(reference.size(), false);
  for (std::size_t r = 0; r < reference.size(); ++r) {
    std::size_t best = ours.size();
    double best_iou = 0;
    for (std::size_t o = 0; o < ours.size(); ++o) {
      if (used[o] || ours[o].label != reference[r].label) continue;
      if (std::abs(ours[o].score - reference[r].score) > c.max_score_diff) continue;
      const double overlap = iou(ours[o].box, reference[r].box);
      if (overlap >= c.min_iou && overlap > best_iou) {
        best = o;
        best_iou = overlap;
      }
    }
    if (best < ours.size()) {
      used[best] = true;
      matched_reference[r] = true;
      report.pairs.emplace_back(r, best);
    }
  }
  // The other side's unmatched box of exactly d's score, when equal_score_ties allows it.
  auto equal_score = [&](const ScoredBox& d, bool d_is_reference) -> std::string {
    if (!c.equal_score_ties) return "";
    const auto& others = d_is_reference ? ours : reference;
    const auto& taken = d_is_reference ? used : matched_reference;
    for (std::size_t i = 0; i < others.size(); ++i) {
      if (!taken[i] && std::abs(others[i].score - d.score) <= 1e-6f * std::max(1.0f, std::abs(d.score))) {
        return "score equal to the other side's " + describe(others[i]) + " (order of equal scores)";
      }
    }
    return "";
  };
  auto classify = [&](const ScoredBox& d, bool is_reference) {
    const std::string side = is_reference ? "only torchvision has" : "only fpn has";
    std::string why = near_tie(d, reference, ours, c);
    if (why.empty()) why = equal_score(d, is_reference);
    (why.empty() ? report.failures : report.ties).push_back(side + " " + describe(d) + (why.empty() ? "" : ": " + why));
  };
  for (std::size_t r = 0; r < reference.size(); ++r) {
    if (!matched_reference[r]) classify(reference[r], true);
  }
  for (std::size_t o = 0; o < ours.size(); ++o) {
    if (!used[o]) classify(ours[o], false);
  }
  return report;
}

}  // namespace fpn::testing
