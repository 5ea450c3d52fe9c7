"""Datasets for ordinal regression: readers, splits, bad-data reports and the paper's data regimes.

A dataset is named by one DATASET spec string, opened with ``open_dataset(spec, **options)``:

    list:ROOT:TRAIN.txt[:VAL.txt[:TEST.txt]]
        The reference list format: one image per line, ``<path relative to ROOT> <label>
        [<label> ...]``. Whole-number labels (``3``, ``3.0``) are rank indices 0..R-1 (R = largest
        label + 1 unless ``num_ranks`` or ``ranks`` is given); numeric-ish labels with a suffix or a
        fraction (``1930s``, ``2.5``) give one rank per distinct value, in value order (``1930s``
        has value 1930). Several labels on a line: a random one is used for training and the
        middle one (of the sorted labels) for evaluation. Blank lines, lines starting with ``#``
        and a header row (a first line such as ``path label``: no image path, no numeric label)
        are skipped; LF or CRLF line endings. A list file is looked up as given, then inside ROOT.
        Leave a list out with an empty field: ``list:data:train.txt::test.txt``.
    csv:FILE
        A CSV file with a header row holding ``path`` and ``label`` columns (also ``filename`` /
        ``image`` and ``age`` / ``mean``) and optional ``split`` (train / val / test), ``subject``
        and ``stdv`` / ``spread`` (apparent-age spread, ChaLearn LAP style, stored as
        ``Sample.spread``) columns; paths are relative to the CSV's folder. Labels are numbers
        (integers give the ranks min..max; other numbers give one rank per distinct value; with
        ``num_ranks=`` they are rank indices 0..R-1) or, with ``ranks=``, rank names (or indices
        when the names are not numbers); several labels are separated by ``;``. An empty
        ``split`` cell joins the training pool.
    folder:DIR
        One sub-folder per rank, ``DIR/<rank name>/*.jpg`` (any common image type, searched
        recursively). Ranks are ordered numerically when every folder name is a number, else
        alphabetically; pass ``ranks=`` (names in order) to choose the order.
    utkface:DIR
        UTKFace file names ``age_gender_race_date.jpg`` (also ``.jpg.chip.jpg`` and names with a
        field missing; only the leading age is read); ranks are the ages min..max present.
    adience:DIR
        A folder holding the official fold files ``fold_0_data.txt`` ... and ``faces/``; the 8 age
        groups (0, 2) ... (60, 100) are ranks 0..7, the subject is the user id. Ages that are
        not a group tuple are bad labels, unless ``adience_ages='contained'``: then a tuple or a
        single age inside exactly one group maps to it (``(38, 42)`` -> (38, 43)) and ages
        spanning groups or outside all (``(8, 23)``, ``13``), ``None`` or empty stay bad labels.
        ``fold=K`` makes fold K the test split.
    fgnet:DIR
        FG-NET file names ``001A02.JPG`` (subject 001, age 2); ranks are the ages min..max present.
    afad:DIR
        AFAD folders ``AFAD-Full/<age>/<111|112>/*.jpg`` (DIR may be AFAD-Full itself).
    dots:K[:N[:SEED]]
        A synthetic counting task made in memory: 64x64 images with 0..K dark dots on a light
        background (R = K + 1 ranks), N images per rank (default 40), fully determined by SEED
        (default 0). Nothing is downloaded or written.

A path without a ``reader:`` prefix is opened as ``csv:`` when it is a .csv file and ``folder:`` when
it is a folder. Options (all optional): ``ranks`` (a Ranks, a list of names, a names file or a
comma-separated string), ``num_ranks``, ``unit``, ``fold`` and ``adience_ages`` (Adience),
``val_fraction`` (0.1), ``test_fraction`` (0.2), ``seed`` (split seed, 0), ``noise`` (dots colour
noise, True) and ``image_size`` (dots, 64).

Splits: splits named in the data (list files, a CSV ``split`` column, the Adience ``fold``) are
used as given; a missing val or test split is carved out of the training pool. Carving is seeded
and stratified by label, and subject-exclusive when subject ids exist. The val split is the one
for model selection; the test split is only ever used for the final report.

Images stay on disk until ``Dataset.load_image`` is called; ``validate`` reports missing or
unreadable images and bad labels together, with file and line numbers. Nothing here writes files.

Modules: ``core`` (types), ``registry`` (``open_dataset`` and the reader registry), ``labels``
(label tokens -> ranks), ``readers`` (list, csv, folder), ``adience``, ``filenames`` (UTKFace,
FG-NET, AFAD), ``dots``, ``splits`` (splits and regimes), ``checks`` (``validate``).
"""

from explorer.data.datasets.adience import ADIENCE_AGES, ADIENCE_GROUPS, adience_group
from explorer.data.datasets.checks import validate
from explorer.data.datasets.core import IMAGE_EXTENSIONS, MAX_RANKS, SPLITS, Dataset, Sample, ValidationReport
from explorer.data.datasets.dots import DOTS_DEFAULT_N, DOTS_MAX_K, DotsConfig, render_dots
from explorer.data.datasets.filenames import NAME_SPECS, NameSpec
from explorer.data.datasets.registry import OPTIONS, READERS, open_dataset
from explorer.data.datasets.splits import few_shot, label_shift, long_tail, make_splits

__all__ = [
    "ADIENCE_AGES", "ADIENCE_GROUPS", "DOTS_DEFAULT_N", "DOTS_MAX_K", "IMAGE_EXTENSIONS", "MAX_RANKS",
    "NAME_SPECS", "OPTIONS", "READERS", "SPLITS", "Dataset", "DotsConfig", "NameSpec", "Sample", "ValidationReport",
    "adience_group", "few_shot", "label_shift", "long_tail", "make_splits", "open_dataset", "render_dots", "validate",
]
