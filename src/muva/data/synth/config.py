"""Configuration of the synthetic multi-domain pedestrian benchmark (``muva synth``)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Background families a domain can draw its scenes from (one per domain, cycled).
BACKGROUND_FAMILIES: tuple[str, ...] = ("street", "grass", "indoor", "texture")
#: Largest identity number the Market-1501 ``PPPP`` field can hold.
MAX_PID = 9999


@dataclass
class SynthConfig:
    """What ``muva synth`` generates.  Every field can be overridden as ``key=value``.

    Each domain is a Market-1501-layout dataset: ``ids_per_domain`` training identities
    with ``images_per_id`` images each (``bounding_box_train/``), and
    ``test_ids_per_domain`` disjoint test identities with ``queries_per_id`` query images
    (distinct cameras) and ``gallery_per_id`` gallery images, at least one of them under a
    camera no query of that identity uses, plus ``distractors_per_domain`` gallery
    images of one-off people with identity 0.
    """

    seed: int = 0
    num_domains: int = 3
    ids_per_domain: int = 64
    test_ids_per_domain: int = 64
    images_per_id: int = 6
    queries_per_id: int = 1
    gallery_per_id: int = 4
    distractors_per_domain: int = 24
    num_cameras: int = 4
    width: int = 128
    height: int = 256
    # Fraction of identities (per split) that share top and bottom garments (colour,
    # type, pattern) and build with another identity and differ only in head, shoes or bag.
    shared_outfit_fraction: float = 0.3
    # Probability that an image has an occluder in front of the person.
    occlusion_prob: float = 0.12
    # Background family per domain (cycled); empty = street, grass, indoor, texture.
    backgrounds: list[str] = field(default_factory=list)
    # Strength of the between-domain style differences (0 = every domain looks alike).
    style_strength: float = 1.0
    # Strength of the between-camera differences inside a domain.
    camera_strength: float = 1.0

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(self.num_domains >= 1, f"num_domains must be >= 1 (got {self.num_domains})")
        need(self.ids_per_domain >= 1, f"ids_per_domain must be >= 1 (got {self.ids_per_domain})")
        need(self.test_ids_per_domain >= 1, f"test_ids_per_domain must be >= 1 (got {self.test_ids_per_domain})")
        need(self.images_per_id >= 1, f"images_per_id must be >= 1 (got {self.images_per_id})")
        need(self.images_per_id <= 999, f"images_per_id must be <= 999 (got {self.images_per_id})")
        need(self.num_cameras >= 2, f"num_cameras must be >= 2 so that queries can match across cameras (got {self.num_cameras})")
        need(self.num_cameras <= 9, f"num_cameras must be <= 9 (Market file names hold one camera digit; got {self.num_cameras})")
        need(1 <= self.queries_per_id < self.num_cameras,
             f"queries_per_id must be between 1 and num_cameras - 1 = {self.num_cameras - 1} (got {self.queries_per_id})")
        need(self.gallery_per_id >= 1, f"gallery_per_id must be >= 1 (got {self.gallery_per_id})")
        need(self.distractors_per_domain >= 0, f"distractors_per_domain must be >= 0 (got {self.distractors_per_domain})")
        need(32 <= self.width <= 1024 and 64 <= self.height <= 2048,
             f"image size {self.width}x{self.height} out of range (width 32..1024, height 64..2048)")
        need(0.0 <= self.shared_outfit_fraction <= 1.0, f"shared_outfit_fraction must be in [0, 1] (got {self.shared_outfit_fraction})")
        need(0.0 <= self.occlusion_prob <= 1.0, f"occlusion_prob must be in [0, 1] (got {self.occlusion_prob})")
        need(self.style_strength >= 0 and self.camera_strength >= 0, "style_strength and camera_strength must be >= 0")
        bad = [b for b in self.backgrounds if b not in BACKGROUND_FAMILIES]
        need(not bad, f"unknown background famil{'y' if len(bad) == 1 else 'ies'} {', '.join(bad)}; "
                      f"choose from {', '.join(BACKGROUND_FAMILIES)}")
        total = self.num_domains * self.ids_per_domain_total
        need(total <= MAX_PID, f"{total} identities in all do not fit the 4-digit Market identity field (max {MAX_PID}); "
                               "lower num_domains, ids_per_domain or test_ids_per_domain")

    @property
    def ids_per_domain_total(self) -> int:
        """Training plus test identities of one domain."""
        return self.ids_per_domain + self.test_ids_per_domain

    @property
    def images_per_domain(self) -> int:
        return (self.ids_per_domain * self.images_per_id
                + self.test_ids_per_domain * (self.queries_per_id + self.gallery_per_id)
                + self.distractors_per_domain)

    @property
    def num_images(self) -> int:
        return self.num_domains * self.images_per_domain

    def background(self, domain: int) -> str:
        """Background family of domain ``domain``."""
        families = self.backgrounds or list(BACKGROUND_FAMILIES)
        return families[domain % len(families)]
