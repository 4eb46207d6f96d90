//! Iris edge: client sessions over WebSocket, local presence map.
