"""langbridge: multilingual reasoning for English-centric LMs, trained on English data only (Yoon et al., ACL 2024)."""

from transformers import AutoConfig, AutoModelForCausalLM

from langbridge.bridge import FFNBridge, LinearBridge
from langbridge.configuration import LangBridgeConfig
from langbridge.modeling import LangBridgeModel
from langbridge.processing import LangBridgeProcessor

__version__ = "0.1.0"

# After `import langbridge`, saved checkpoints load through the Auto classes too.
AutoConfig.register(LangBridgeConfig.model_type, LangBridgeConfig, exist_ok=True)
AutoModelForCausalLM.register(LangBridgeConfig, LangBridgeModel, exist_ok=True)

__all__ = [
    "FFNBridge",
    "LangBridgeConfig",
    "LangBridgeModel",
    "LangBridgeProcessor",
    "LinearBridge",
    "__version__",
]
