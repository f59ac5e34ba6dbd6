"""Who made a shared model, under which licence, and what to cite: :class:`ExportMeta`.

A bioimage.io package must name its authors, licence and at least one
citation. Segloop fills what it knows (the model's name, the architecture's
paper, the training recorded in the bundle) and leaves clear placeholders for
the rest; :meth:`ExportMeta.placeholders` lists what the user should still
fill in before sharing, and the CLI and the Model dock say so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

#: Shown where the user has not named an author yet.
PLACEHOLDER_AUTHOR = "Unknown author (fill in before sharing)"
#: The licence of an exported model when none is given (the bioimage.io default).
DEFAULT_LICENSE = "CC-BY-4.0"

#: The paper of each architecture family (a citation is mandatory in a bioimage.io package).
ARCHITECTURE_PAPERS: dict[str, tuple[str, str]] = {
    "Unet": ("Ronneberger, Fischer & Brox (2015). U-Net: Convolutional Networks for Biomedical "
             "Image Segmentation. MICCAI.", "10.1007/978-3-319-24574-4_28"),
    "ClassicUNet": ("Ronneberger, Fischer & Brox (2015). U-Net: Convolutional Networks for "
                    "Biomedical Image Segmentation. MICCAI.", "10.1007/978-3-319-24574-4_28"),
    "UnetPlusPlus": ("Zhou et al. (2018). UNet++: A Nested U-Net Architecture for Medical Image "
                     "Segmentation. DLMIA.", "10.1007/978-3-030-00889-5_1"),
    "AttentionUNet": ("Oktay et al. (2018). Attention U-Net: Learning Where to Look for the "
                      "Pancreas. MIDL.", "10.48550/arXiv.1804.03999"),
    "UNet3Plus": ("Huang et al. (2020). UNet 3+: A Full-Scale Connected UNet for Medical Image "
                  "Segmentation. ICASSP.", "10.1109/ICASSP40776.2020.9053405"),
    "DeepLabV3Plus": ("Chen et al. (2018). Encoder-Decoder with Atrous Separable Convolution for "
                      "Semantic Image Segmentation. ECCV.", "10.1007/978-3-030-01234-2_49"),
    "FPN": ("Lin et al. (2017). Feature Pyramid Networks for Object Detection. CVPR.",
            "10.1109/CVPR.2017.106"),
}
#: Cited for architectures not in :data:`ARCHITECTURE_PAPERS`.
SMP_CITATION = ("Iakubovskii, P. Segmentation Models Pytorch (software).",
                "https://github.com/qubvel/segmentation_models.pytorch")

_ORCID = re.compile(r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$")
#: The characters bioimage.io allows in a model name.
NAME_CHARACTERS = "letters, digits, spaces and _ + - ( )"
_NAME = re.compile(r"^[A-Za-z0-9_+\- ()]+$")


def default_name(source: str) -> str:
    """A name bioimage.io accepts, made from a model's source (a bundle folder's name)."""
    if source in ("default", "new", ""):
        return "segloop default model" if source == "default" else "segloop model"
    name = re.sub(r"[^A-Za-z0-9_+\- ()]+", " ", source.replace("\\", "/").rstrip("/").split("/")[-1])
    name = " ".join(name.split())[:128]
    return name if len(name) >= 5 else f"{name} model".strip()


@dataclass
class Author:
    """One author of a shared model.

    Attributes
    ----------
    name : str
    affiliation : str, optional
    orcid : str, optional
        ``0000-0000-0000-0000`` form.
    """

    name: str
    affiliation: str | None = None
    orcid: str | None = None

    @classmethod
    def parse(cls, text: str) -> Author:
        """Read ``"Name; affiliation; ORCID"`` (the last two optional), as the CLI's ``--author`` takes.

        Raises
        ------
        ValueError
            Without a name, or with an ORCID that is not ``0000-0000-0000-000X``.
        """
        parts = [p.strip() for p in str(text).split(";")]
        if not parts or not parts[0]:
            raise ValueError(f"An author needs a name ('Name; affiliation; ORCID'); got {text!r}.")
        orcid = parts[2] if len(parts) > 2 and parts[2] else None
        if orcid is not None and not _ORCID.match(orcid):
            raise ValueError(f"{orcid!r} is not an ORCID iD (0000-0000-0000-000X).")
        return cls(parts[0], parts[1] if len(parts) > 1 and parts[1] else None, orcid)


@dataclass
class Citation:
    """A reference to cite: its text, and a DOI (``10.…``) or a URL."""

    text: str
    doi_or_url: str | None = None

    @property
    def doi(self) -> str | None:
        """The DOI, if ``doi_or_url`` is one."""
        ref = self.doi_or_url or ""
        return ref if ref.startswith("10.") else None

    @property
    def url(self) -> str | None:
        """The URL, if ``doi_or_url`` is one."""
        ref = self.doi_or_url or ""
        return ref if ref.startswith(("http://", "https://")) else None

    @classmethod
    def parse(cls, text: str) -> Citation:
        """Read ``"text; DOI or URL"`` (the CLI's ``--cite``).

        Raises
        ------
        ValueError
            Without a text, or with a reference that is neither a DOI nor a URL.
        """
        body, _, ref = str(text).partition(";")
        body, ref = body.strip(), ref.strip()
        if not body:
            raise ValueError(f"A citation needs a text ('text; DOI or URL'); got {text!r}.")
        if ref and not ref.startswith(("10.", "http://", "https://")):
            raise ValueError(f"{ref!r} is neither a DOI (10.…) nor a URL (https://…).")
        return cls(body, ref or None)


@dataclass
class ExportMeta:
    """What a bioimage.io package says about a model beyond its weights.

    Attributes
    ----------
    name : str
        Human-readable name (at most 128 characters).
    description : str
        One or two sentences: what it segments, in which images.
    authors : list of Author
        Empty: a placeholder author, listed by :meth:`placeholders`.
    license : str
        An SPDX licence id (``CC-BY-4.0``, ``MIT``, ...).
    citations : list of Citation
        Besides the architecture's paper, which is always cited.
    tags : list of str
        Search tags (segloop adds ``segmentation``, ``2d``, the architecture...).
    version : str
        The model's own version.
    """

    name: str = "segloop model"
    description: str = ""
    authors: list[Author] = field(default_factory=list)
    license: str = DEFAULT_LICENSE
    citations: list[Citation] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    version: str = "0.1.0"

    def name_problem(self) -> str | None:
        """Why bioimage.io would refuse the name (checked before any work), or None."""
        name = self.name.strip()
        if not _NAME.match(name):
            return f"The model name {name!r} may only contain {NAME_CHARACTERS}."
        if len(name) > 128:
            return "The model name is longer than 128 characters."
        return None

    def placeholders(self) -> list[str]:
        """What still holds a placeholder: fill these in before sharing the model."""
        missing = []
        if not self.authors:
            missing.append("authors")
        if not self.description.strip():
            missing.append("description")
        return missing

    def all_citations(self, architecture: str) -> list[Citation]:
        """The user's citations, then the architecture's paper (or smp's repository)."""
        text, ref = ARCHITECTURE_PAPERS.get(architecture, SMP_CITATION)
        cites = list(self.citations)
        if not any((c.doi_or_url or "") == ref for c in cites):
            cites.append(Citation(text, ref))
        return cites

    def to_json(self) -> dict[str, Any]:
        """A plain dict (kept in the package's ``config.segloop`` for the record)."""
        return {"name": self.name, "description": self.description,
                "authors": [vars(a) for a in self.authors], "license": self.license,
                "citations": [vars(c) for c in self.citations], "tags": list(self.tags),
                "version": self.version}
