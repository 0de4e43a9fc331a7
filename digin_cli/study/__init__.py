"""Blinded user studies as both papers ran them (DiG-IN Table 1; DiffExplainer Sec. 4.3): ``digin study make``
builds a static study page from one or two runs (:mod:`.make`), ``digin study score`` turns the downloaded answers
into the papers' statistics (:mod:`.score`). Questionnaires: :mod:`.questions`; items and matching: :mod:`.items`."""
