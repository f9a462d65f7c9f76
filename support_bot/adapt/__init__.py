"""Adapting the product to the company's own data: tuned embedders as versioned artifacts, gated before going live.

    data         training examples from the knowledge base, resolved chats, approved suggestions and helpful answers,
                 and the fixed, seeded held-out slice that is never trained on
    trainer      contrastive fine-tuning of the configured sentence-transformers model
    gate         the held-out evaluation of an embedder through the real retriever, and the comparison with the live one
    artifacts    the artifact store under <data_dir>/adapters/<kind>/ and the state file naming the active one
    activation   re-embedding the knowledge base with an artifact into a new index version; rollback
    jobs         tuning and activation as jobs with progress, run in-process or in a detached process
    service      what the CLI and the console call: tune, list, activate, roll back
    commands     the `support-bot tune` and `support-bot adapters` commands

Importing this package loads neither torch nor FAISS.
"""
