//! Endpoints derived from Pods and Service selectors, as the EndpointSlice controller does.
