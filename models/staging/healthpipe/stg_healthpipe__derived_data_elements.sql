{#- Derived data element definitions compiled from the YAML files by pipelines/derived.py:
    filter_sql and value_sql hold only validated column names and quoted literals. -#}
with source as (

    select * from {{ source('healthpipe', 'derived_data_elements') }}

),

renamed as (

    select
        -- ids
        data_element_id,

        -- descriptors
        name,
        domain,
        description,
        source_file,

        -- definition
        source_model,
        filter_sql,
        value_sql,
        period_type,
        date_column,
        period_column,
        org_unit_column,
        disaggregate_by,
        aggregation_type

    from source

)

select * from renamed
