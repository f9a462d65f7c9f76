"""Adapting the product to the company's own data: tuned embedders and chat-model LoRA adapters as versioned
artifacts, gated before going live.

    data         training examples from the knowledge base, resolved chats, approved suggestions and helpful answers,
                 and the fixed, seeded held-out slice that is never trained on
    trainer      contrastive fine-tuning of the configured sentence-transformers model
    gate         the held-out evaluation of an embedder through the real retriever, and the comparison with the live one
    artifacts    the artifact store under <data_dir>/adapters/<kind>/ and the state file naming the active one
    activation   re-embedding the knowledge base with an artifact into a new index version; rollback
    chat_data    chat-model examples in the deployment's own prompt: retrieved sources, a cited answer or the decline
    chat_trainer LoRA (peft) on those examples, the loss on the answer tokens only
    chat_gate    the live and the tuned chat model answering held-out questions through the customer turn, judged
                 as `eval answers` judges; the engine (llm.backends.hf) serves the live adapter, llm.adapters names it
    jobs         tuning and activation as jobs with progress, run in-process or in a detached process
    service      what the CLI and the console call: tune, list, activate, roll back
    commands     the `support-bot tune` and `support-bot adapters` commands

Importing this package loads neither torch nor FAISS.
"""
