"""Knowledge: the embedder, the versioned FAISS + BM25 index store, and the hybrid retriever.

Importing this package loads neither torch nor FAISS; they load on first use.
"""

from support_bot.knowledge.embedder import Embedder, get_embedder
from support_bot.knowledge.reader import IndexReader, load_current
from support_bot.knowledge.index import IndexVersion
from support_bot.knowledge.publish import publish_index
from support_bot.knowledge.retriever import Hit, RetrievalResult, Retriever, get_retriever

__all__ = [
    "Embedder",
    "Hit",
    "IndexReader",
    "IndexVersion",
    "RetrievalResult",
    "Retriever",
    "get_embedder",
    "get_retriever",
    "load_current",
    "publish_index",
]
