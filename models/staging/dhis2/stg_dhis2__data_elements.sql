with source as (

    select * from {{ source('dhis2', 'data_elements') }}
    where validation_status = 'valid' and not is_deleted

),

renamed as (

    select
        -- ids
        id as data_element_id,
        category_combo_id,
        source_name,

        -- descriptors
        code,
        name,
        short_name,
        upper(coalesce(value_type, 'NUMBER')) as value_type,
        upper(coalesce(aggregation_type, 'SUM')) as aggregation_type,
        upper(coalesce(domain_type, 'AGGREGATE')) as domain_type,

        -- dates
        {{ hp_try_cast_timestamp('last_updated') }} as source_updated_at,
        landed_at

    from source

)

select * from renamed
