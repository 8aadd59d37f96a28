# find_package(sk_edge) after `cmake --install`: the sk_edge::sk_edge target and its dependencies.
include(CMakeFindDependencyMacro)
find_dependency(CUDAToolkit)
find_dependency(nlohmann_json 3)
include("${CMAKE_CURRENT_LIST_DIR}/sk_edgeTargets.cmake")
