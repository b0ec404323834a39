"""`langbridge serve`: an OpenAI-compatible server (FastAPI + uvicorn) with continuous batching, and a page that
shows LangBridge and the LM alone answering the same question side by side. Needs `pip install 'langbridge[serve]'`."""
