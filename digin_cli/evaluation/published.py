"""ACE's ImageNet protocol (Jeanneret et al., CVPR 2023, Sec. 4; reused by LDCE and MaskDiME) and the published FID
of the peers, to print beside digin's numbers.

The FID values are **as reported** by the wizwand.com results aggregator for each paper (collected in the project's
peer survey, 2026-12); they could not be checked against the papers' own tables here (no copy of the tables was
reachable offline). Each paper's protocol details (image resolution, which originals FID compares with) differ
from digin's in ways its text states; treat the columns as context, not as a like-for-like ranking.
"""

from __future__ import annotations

# (class a, ImageNet index a, class b, index b): every val image of a is explained toward b and vice versa.
PAIRS = (("zebra", 340, "sorrel", 339), ("cheetah", 293, "cougar", 286), ("Egyptian cat", 285, "Persian cat", 283))

# FID per pair, in PAIRS order, as reported (see the module docstring).
PUBLISHED_FID = {
    "ACE (Jeanneret et al. 2023)": (67.7, 70.2, 93.6),
    "LDCE (Farid et al. 2023)": (82.4, 71.0, 102.7),
    "MaskDiME (Guo et al. 2026)": (32.5, 37.4, 36.2),
}
SOURCE = "as reported via wizwand.com (peer survey 2026-12), not checked against the papers' tables"
