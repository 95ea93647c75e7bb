// The FPN paper's recall experiment (Lin et al. 2017, Table 1) as type aliases: five proposal
// networks from the same parts, differing only in which stages the neck takes and which of its
// connections exist. The trained models are examples/data/seed/<variant>.safetensors
// (tools/train_seed.py, on the demo's shapes scenes; the PyTorch references are
// tools/fpn_tools/seed_models.py). Every one has the demo's body, a ResNet of BasicBlocks with
// base width 16 and one block per stage (C2..C5 of 16, 32, 64, 128 channels), a 64-channel neck
// and one RPN head shared by its levels; the anchors and the per-level candidate counts are the
// file's metadata (one size per level on five levels, all five sizes on one level).
//
//   SeedFPN                 P2..P6 from the full pathway (the paper's (c))
//   SeedC4                  one level from C4 alone, the single-scale baseline ((a), (b))
//   SeedP2                  the full pathway, but only P2 is output, with every anchor size ((d))
//   SeedTopDownNoLateral    top-down without the 1x1 laterals below the top ((e))
//   SeedLateralNoTopDown    laterals without the top-down additions ((f))
//
// And the paper's segment proposals (section 6.1): SeedSegments, window MLPs of 5x5 and 7x7 over
// SeedFPN's pyramid predicting 14x14 masks (nn/segment_proposals.hpp).
#pragma once

#include "fpn/models/proposal_network.hpp"
#include "fpn/models/segment_proposal_network.hpp"
#include "fpn/nn/backbone.hpp"
#include "fpn/nn/extra_levels.hpp"
#include "fpn/nn/fpn.hpp"
#include "fpn/nn/resnet.hpp"
#include "fpn/nn/segment_proposals.hpp"

namespace fpn {

using SeedBody = nn::ResNet<nn::BasicBlock, 16, 1, 1, 1, 1>;

template <typename Neck, typename Returned = nn::Stages<1, 2, 3, 4>>
using SeedBackbone = nn::BackboneWithFPN<SeedBody, Neck, Returned>;

using SeedFPNBackbone = SeedBackbone<nn::FPN<64>>;
using SeedC4Backbone = SeedBackbone<nn::FPN<64, nn::BiasOnly, nn::NoExtraLevels>, nn::Stages<3>>;
using SeedP2Backbone =
    SeedBackbone<nn::FPN<64, nn::BiasOnly, nn::NoExtraLevels, nn::LateralsAndTopDown, nn::FinestLevelOnly>>;
using SeedTopDownNoLateralBackbone =
    SeedBackbone<nn::FPN<64, nn::BiasOnly, nn::LastLevelMaxPool, nn::TopDownWithoutLaterals>>;
using SeedLateralNoTopDownBackbone =
    SeedBackbone<nn::FPN<64, nn::BiasOnly, nn::LastLevelMaxPool, nn::LateralsWithoutTopDown>>;

using SeedFPN = ProposalNetwork<SeedFPNBackbone, "seed_fpn">;
using SeedC4 = ProposalNetwork<SeedC4Backbone, "seed_c4">;
using SeedP2 = ProposalNetwork<SeedP2Backbone, "seed_p2">;
using SeedTopDownNoLateral = ProposalNetwork<SeedTopDownNoLateralBackbone, "seed_topdown_no_lateral">;
using SeedLateralNoTopDown = ProposalNetwork<SeedLateralNoTopDownBackbone, "seed_lateral_no_topdown">;

using SeedSegments = SegmentProposalNetwork<SeedFPNBackbone, nn::SegmentProposalHead<64>, "seed_segments">;

}  // namespace fpn
