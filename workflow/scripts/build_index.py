"""FAISS IndexFlatIP (exact cosine) over one space of the train images' embeddings."""

from skinground import cli
from skinground.index import build_index, save_index
from skinground.shards import read_space


def run() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--train", required=True, help="merged train space (.npz)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    _, vectors = read_space(a.train)
    save_index(build_index(vectors), a.out)


if __name__ == "__main__":
    cli.main(run)
